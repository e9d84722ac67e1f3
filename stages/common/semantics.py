"""The recipe points that frameworks express differently, and the conventions a backend may
have for each: a leaf module, read by the backends (``SEMANTICS``) and by the report."""

from __future__ import annotations

# Every backend's SEMANTICS names one convention per key (docs/fairness.md, "Semantic differences").
SEMANTIC_CHOICES: dict[str, dict[str, str]] = {
    "moving_variance": {
        "biased": "batch norm's running variance follows the batch variance divided by n",
        "unbiased": "batch norm's running variance follows the batch variance divided by n - 1 (Bessel)"},
    "adam_epsilon": {
        "corrected": "epsilon added to the square root of the bias-corrected second moment",
        "uncorrected": "epsilon added to the square root of the raw second moment, bias correction folded "
                       "into the rate (an effective epsilon of eps / sqrt(1 - beta2^t))"},
    "sgd_momentum": {
        "weight_units": "velocity kept in weight units: v = m v - lr g; w += v",
        "gradient_units": "buffer kept in gradient units: b = m b + g; w -= lr b (differs from weight units "
                          "whenever the rate changes)"},
    "sgd_weight_decay": {
        "decoupled": "decay applied to the weights directly: w -= lr wd w",
        "coupled": "decay added to the gradient (L2): g += wd w"},
    "gelu": {"exact": "GELU with the error function", "tanh": "GELU's tanh approximation"},
}
