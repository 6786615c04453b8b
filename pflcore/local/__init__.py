"""Layer 3, local: one client's training, with no Flower message in sight.

Training loops, batching, transforms, devices, fine-tuning, the model check
and the worker runtime a ClientApp works through. Imports config and data.
"""
