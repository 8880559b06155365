"""Few-shot evaluation in the report's format (Appendix A): held-out tasks of the closed world
(`tasks`), log-likelihood and chain-of-thought scoring (`harness`), and `tinyphi3 eval` (`cli`).

    from tinyphi3.evaluation.harness import evaluate, format_table
    result = evaluate(model, tokenizer, "knowledge", shots=5, n=200)
"""
