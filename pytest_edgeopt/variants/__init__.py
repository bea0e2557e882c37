"""Variant builders, one module per family: ptq.py (TFLiteConverter), tfmot.py (Model
Optimization Toolkit), aeq.py (AI Edge Quantizer); registry.py names them."""
