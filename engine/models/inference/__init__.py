"""The CPU inference engine behind the `hf` provider's loglikelihoods (docs/architecture.md, "The loglikelihood path").

`flat_forward` (a Llama forward over packed, unpadded segments), `hf_tree` (which segments share a
prefix), `lean_llama` (weights and tokenizer read without transformers) and `hf_loglikelihood` (the
batched scoring the provider calls). Every module here imports torch at its top: the provider loads
them lazily, so a fully cached run never does.
"""
