"""The Pi 5 edge collector: evdev capture, consent gate, edge redaction, spool, delivery."""
