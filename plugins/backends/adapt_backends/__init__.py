"""adapt-backends: distributed backends ddp, fsdp, deepspeed (to come: issue #6).

This pack registers nothing yet; it exists so the repository layout and the install are final.
"""
