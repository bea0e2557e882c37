"""Where variants run: base.py (the Target protocol), cpu.py, android.py, edgetpu.py."""
