"""adapt-vision: image classification, object detection, instance segmentation and pose (to come: issue #5).

This pack registers nothing yet; it exists so the repository layout and the install are final.
"""
