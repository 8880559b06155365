"""Evaluation in the report's format (Appendix A) on held-out items of the closed world.

    harness       few-shot log-likelihood and chain-of-thought scoring (`evaluate`)
    perplexity    held-out perplexity
    safety_eval   the safety evaluation on held-out harm categories (the report's Figure 4)
    wording       the chat model on held-out wordings, each reply judged by a stated rule
    vision        the tiny phi-3-vision on held-out pictures (tinyphi3.data.images), with each
                  picture and with a blank one in its place, against chance (`evaluate_vision`)
    passkey       long context: passkey retrieval on a depth x length grid, and perplexity by
                  position bucket on long held-out documents

The tasks themselves (the items and how they are rendered) are tinyphi3.data.tasks: training text
uses the same format. The command is `tinyphi3 eval` (tinyphi3/cli/evaluation.py).

    from tinyphi3.evaluation.harness import evaluate, format_table
    result = evaluate(model, tokenizer, "knowledge", shots=5, n=200)
"""
