"""Crash tests: the server as a subprocess, SIGKILLed and restarted."""
