"""Files in and out.

    safetensors  a reader that checks every header against the file, and a streaming writer
    checkpoint   Hugging Face directories: config.json, single or sharded safetensors, dtypes
"""
