"""The Phi-3 models.

    model       Phi3: one class for every variant (the public API), FLOAT and Q4 weight formats
    variants    config.json's model_type -> the module that computes a layer
    phi3        phi-3-mini, mini-128K and medium's block (and the list of what a variant provides)
    phi3_small  phi-3-small's block: grouped qkv, GEGELU, μP, block-sparse attention
    weights     tensor names, shapes and initialisation, from the variant
    call        what the layers of one forward call share
    quantize    a float checkpoint of any variant to 4 bits
    vision/     phi-3-vision: the CLIP tower, the image processor, the projector, and Phi3V (a Phi3
                decoder with an image side, which Phi3.from_pretrained returns for "phi3_v")
"""
