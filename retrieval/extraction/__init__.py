"""Network -> descriptors: inference copies, int8, batched multi-scale extraction, caches."""
