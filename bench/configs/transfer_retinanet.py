# bench/detection_transfer.py's detector: the tests' tiny RetinaNet at half width (ResNet-18 layout, 3.1M
# parameters), 64-channel FPN and heads with two stacked convs, for 96 px images.
_base_ = "../../plugins/vision/tests/configs/tiny_retinanet.py"
model = dict(backbone=dict(base_channels=32), neck=dict(in_channels=[64, 128, 256], out_channels=64),
             bbox_head=dict(in_channels=64, stacked_convs=2, feat_channels=64))
