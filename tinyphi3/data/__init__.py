"""The report's data recipe in miniature, and the post-training data, all made by code.

    world             a closed world: made-up creatures with facts, first-school-year skills
    tasks             held-out problems of that world as items in the report's prompt format
    textbooks         synthetic "textbook-quality" pages that teach the world
    web               a web-like corpus of mixed quality, each page tagged with its kind
    classifier        the educational-value classifier (logistic regression on hashed words)
    phases            phase 1 and phase 2 of pre-training: what each phase sees
    reading           reading from the prompt: copying and finding the option that says a thing
    everyday          dictionary pages of the everyday words users type, for pre-training
    images            pictures of the world with questions or captions, for phi-3-vision
    longdocs          long documents (stories that refer back, long chats) and passkey
                      documents, for long-context mid-training and its evaluation
    documents, shards documents on disk (.jsonl, .txt) and token shards for training
    post_training     SFT conversations and DPO pairs from the world
    chat_texts        the wordings of the chat data: system prompts, small talk, identity
    wordings          many wordings of each chat request, split by part for held-out wordings
    safety, benign    harmful requests and refusals; harmless look-alikes and their answers
    rejected_replies  the undesired replies of DPO pairs

    from tinyphi3.data.textbooks import generate_textbooks
    for doc in generate_textbooks(1000, seed=0): ...
"""
