"""tinyphi3: the Phi-3 models of the technical report, from scratch in readable NumPy."""
