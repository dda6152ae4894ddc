# A Mask R-CNN small enough to train on the CPU in seconds: mmdet's own Mask R-CNN with a ResNet-18
# layout at 1/4 width, 32-channel FPN and heads, fewer sampled RoIs.
_base_ = "mmdet::_base_/models/mask-rcnn_r50_fpn.py"
model = dict(
    backbone=dict(depth=18, base_channels=16, frozen_stages=-1, norm_eval=False, init_cfg=None),
    neck=dict(in_channels=[16, 32, 64, 128], out_channels=32, num_outs=5),
    rpn_head=dict(in_channels=32, feat_channels=32),
    roi_head=dict(bbox_roi_extractor=dict(out_channels=32), bbox_head=dict(in_channels=32, fc_out_channels=64),
                  mask_roi_extractor=dict(out_channels=32),
                  mask_head=dict(num_convs=1, in_channels=32, conv_out_channels=32)),
    train_cfg=dict(rpn_proposal=dict(nms_pre=200, max_per_img=100), rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=200, max_per_img=100)))
test_dataloader = dict(dataset=dict(pipeline=[dict(type="Resize", scale=(96, 96), keep_ratio=True)]))
