"""The names a user types: targets (markers, ``--edgeopt-targets``) and variants
(``edgeopt_variants``, ``--edgeopt-variants``).

Only names, so the plugin can offer and check them at start-up without importing the
variant registry or the targets (every pytest run of a project with the plugin installed
pays for what the plugin imports). :mod:`pytest_edgeopt.variants.registry` refuses to load
when its variants differ from :data:`VARIANT_NAMES`.
"""

#: Where variants run; each is also a marker.
TARGET_NAMES: tuple[str, ...] = ("cpu", "android_gpu", "android_cpu", "edgetpu")

#: Every variant, in the order items are parametrized and reports list them.
VARIANT_NAMES: tuple[str, ...] = (
    "fp32", "float16", "dynamic_range", "int8", "int8_full", "int16x8",
    "qat_int8", "pruned", "pruned_int8", "clustered", "clustered_int8", "pqat_int8", "cqat_int8", "pcqat_int8",
    "aeq_dynamic_wi8", "aeq_weight_only_wi8", "aeq_static_a8w8", "aeq_dynamic_wi4",
)
