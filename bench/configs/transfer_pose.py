# bench/detection_transfer.py's pose model: the tests' tiny SimpleBaseline at half width (ResNet-18 layout),
# 64 x 64 crops, 64-channel deconvolution head.
_base_ = "../../plugins/vision/tests/configs/tiny_pose.py"
model = dict(backbone=dict(base_channels=32), head=dict(in_channels=256, deconv_out_channels=(64, 64, 64)))
