# A top-down heatmap pose model small enough to train on the CPU in seconds: mmpose's SimpleBaseline
# layout (ResNet + deconvolution head) with a ResNet-18 at 1/4 width, 64 x 64 crops, 32-channel head.
codec = dict(type="MSRAHeatmap", input_size=(64, 64), heatmap_size=(16, 16), sigma=2)
model = dict(
    type="TopdownPoseEstimator",
    data_preprocessor=dict(type="PoseDataPreprocessor", mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                           bgr_to_rgb=True),
    backbone=dict(type="ResNet", depth=18, base_channels=16),
    head=dict(type="HeatmapHead", in_channels=128, out_channels=17, deconv_out_channels=(32, 32, 32),
              deconv_kernel_sizes=(4, 4, 4), loss=dict(type="KeypointMSELoss", use_target_weight=True), decoder=codec),
    test_cfg=dict(flip_test=True, flip_mode="heatmap", shift_heatmap=True))
