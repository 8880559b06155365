"""Running a model: the KV cache (`cache`), sampling, the decode loop and streaming text
(`generate`)."""
