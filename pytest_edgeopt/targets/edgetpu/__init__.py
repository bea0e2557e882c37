"""Coral Edge TPUs: ``compat.py`` checks a model against the Edge TPU's requirements
without the compiler, ``compiler.py`` runs edgetpu_compiler and parses its log,
``target.py`` loads the runtime as a LiteRT delegate and measures."""
