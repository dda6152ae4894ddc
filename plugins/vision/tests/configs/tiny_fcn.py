# An FCN small enough to train on the CPU in seconds: ResNet-18 (V1c) at 1/4 width, dilated, 1-conv heads.
norm_cfg = dict(type="BN", requires_grad=True)
crop_size = (64, 64)
model = dict(
    type="EncoderDecoder",
    data_preprocessor=dict(type="SegDataPreProcessor", mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                           bgr_to_rgb=True, pad_val=0, seg_pad_val=255, size=crop_size),
    backbone=dict(type="ResNetV1c", depth=18, stem_channels=16, base_channels=16, num_stages=4, out_indices=(0, 1, 2, 3),
                  dilations=(1, 1, 2, 4), strides=(1, 2, 1, 1), norm_cfg=norm_cfg, norm_eval=False, style="pytorch",
                  contract_dilation=True),
    decode_head=dict(type="FCNHead", in_channels=128, in_index=3, channels=32, num_convs=1, concat_input=False,
                     dropout_ratio=0.1, num_classes=19, norm_cfg=norm_cfg, align_corners=False,
                     loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(type="FCNHead", in_channels=64, in_index=2, channels=16, num_convs=1, concat_input=False,
                        dropout_ratio=0.1, num_classes=19, norm_cfg=norm_cfg, align_corners=False,
                        loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=0.4)),
    train_cfg=dict(),
    test_cfg=dict(mode="whole"))
test_dataloader = dict(dataset=dict(pipeline=[dict(type="Resize", scale=(64, 64), keep_ratio=True)]))
