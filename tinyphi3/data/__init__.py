"""The report's data recipe in miniature: a closed world of facts and skills (`world`), and
"textbook-quality" synthetic documents that teach it (`textbooks`).

    from tinyphi3.data.textbooks import generate_textbooks
    for doc in generate_textbooks(1000, seed=0): ...
"""
