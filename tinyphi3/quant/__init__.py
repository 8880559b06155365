"""Storage formats that trade precision for memory and speed.

    layout      the 4-bit packing's constants
    q4          4-bit block weights, their reference product and embedding lookup
    kv8         the 8-bit KV cache of 4-bit models
    checkpoint  4-bit checkpoints: written tensor by tensor, loaded and checked
"""
