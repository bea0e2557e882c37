"""Variants: how each optimized model is made. ``registry.py`` names every variant
(``VariantSpec``), ``builder.py`` builds through the content-addressed ``cache.py``, one
module per tool family builds the bytes (``ptq.py`` TFLiteConverter, ``tfmot.py`` the Model
Optimization Toolkit, ``aeq.py`` AI Edge Quantizer, ``tflite_quant.py`` the named post-training
variants of a float ``.tflite`` through AI Edge Quantizer, ``tfenv.py`` their shared TensorFlow
set-up), ``keras_bridge.py`` the tf_keras twin of a Keras 3 model (proved equivalent) for tfmot,
and ``quant_debug.py`` explains and repairs quantization errors per node."""
