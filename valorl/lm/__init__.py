"""Value learning for small language models on verifiable tasks (`valorl lm`).

tokenizer → tasks (problems, verifiers, demonstrations) → model (decoder with a KV cache) →
sampling → policy_gradient (the unified estimator, HPT) and value_targets (TD(λ)) →
objectives (one training step per stage) → train (runs) → decoding (value-guided decoding).
"""
