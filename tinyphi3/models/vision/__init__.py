"""Phi-3-vision's image side: pixels to vectors in the decoder's embedding space.

    clip          the CLIP ViT tower (ViT-L/14-336 in the published model): pixels -> features
    hd_transform  the image processor: an image -> 336-pixel crops (a global view and a grid)
    projector     the 2x2 merge of patch features, the separators, the MLP to the decoder
    phi3v         the whole model (Phi3V): image vectors spliced into the decoder's tokens
    weights       its tensors: names, shapes, parts (tower, projector, decoder), random init
    processor     a prompt with image tags and the images -> input_ids with image slots, pixels
    conversation  a chat whose messages carry pictures -> the same inputs (model card format)
    image_file    an image file -> a Pillow image, or one clear error (truncated, bomb, ...)

Shape letters of the folder (beside tinyphi3/config's): N crops (or images), S crop side in
pixels, P patch side, G = S / P patches per side, g = G / 2 merged tokens per side, C the
tower's width (4C after the 2x2 merge), D the decoder's hidden size, h x w an image's crops.
"""
