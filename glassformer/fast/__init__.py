"""The fast path beside the model: C kernels, fused training modules, the one-token decode step, weight-only storage.

Swapped in from outside through `accelerate` and tested equal to the readable modules; the model never imports it."""
