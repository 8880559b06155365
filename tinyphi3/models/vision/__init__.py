"""Phi-3-vision's image side: pixels to vectors in the decoder's embedding space.

    clip          the CLIP ViT tower (ViT-L/14-336 in the published model): pixels -> features
    hd_transform  the image processor: an image -> 336-pixel crops (a global view and a grid)
    projector     the 2x2 merge of patch features, the separators, the MLP to the decoder (to come)
    phi3v         the whole model: image features spliced into the decoder's tokens (to come)

Shape letters of the folder (beside tinyphi3/config's): N crops, S crop side in pixels,
P patch side, G = S / P patches per side.
"""
