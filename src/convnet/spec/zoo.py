"""Named architectures, as spec text: shapes without weights until you build them.

``build("vgg16", weights=False)`` (or ``convnet summary vgg16``) infers every shape at once;
``build("digits", seed=0)`` gives a network ready to train.

>>> zoo_names()[:3]
['lenet5', 'alexnet', 'vgg16']
"""

from __future__ import annotations

import difflib

from convnet.errors import SpecError

# Each entry: (spec text, what it is and where its numbers come from).
_ENTRIES: dict[str, tuple[str, str]] = {
    "lenet5": (
        """INPUT(32x32x1)
           -> CONV(6,F=5) -> TANH -> AVGPOOL
           -> CONV(16,F=5) -> TANH -> AVGPOOL
           -> FC(120) -> TANH -> FC(84) -> TANH -> FC(10)""",
        "LeNet-5 style (LeCun et al. 1998) on 32x32 grayscale digits: 32 -> 28 -> 14 -> 10 -> 5, "
        "then 5x5x16 = 400 -> 120 -> 84 -> 10; tanh and average pooling as in the original "
        "(without its sparse C3 connections and RBF output). 61,706 parameters.",
    ),
    "alexnet": (
        """INPUT(227x227x3)
           -> CONV(96,F=11,S=4) -> RELU -> POOL(F=3,S=2)
           -> CONV(256,F=5,P=2) -> RELU -> POOL(F=3,S=2)
           -> CONV(384,F=3,P=1) -> RELU -> CONV(384,F=3,P=1) -> RELU
           -> CONV(256,F=3,P=1) -> RELU -> POOL(F=3,S=2)
           -> FC(4096) -> RELU -> DROPOUT -> FC(4096) -> RELU -> DROPOUT -> FC(1000)""",
        "AlexNet (Krizhevsky et al. 2012) as one tower, without local response normalisation. "
        "First layer: 227x227x3 with 96 filters 11x11 at stride 4: (227 - 11)/4 + 1 = 55, so "
        "55x55x96 and 96*(11*11*3 + 1) = 34,944 parameters. Overlapping 3x3 stride-2 pooling: "
        "55 -> 27 -> 13 -> 6, so the first FC layer sees 6x6x256 = 9,216 values.",
    ),
    "vgg16": (
        """INPUT(224x224x3)
           -> [CONV(64,F=3,P=1) -> RELU]*2 -> POOL
           -> [CONV(128,F=3,P=1) -> RELU]*2 -> POOL
           -> [CONV(256,F=3,P=1) -> RELU]*3 -> POOL
           -> [CONV(512,F=3,P=1) -> RELU]*3 -> POOL
           -> [CONV(512,F=3,P=1) -> RELU]*3 -> POOL
           -> FC(4096) -> RELU -> DROPOUT -> FC(4096) -> RELU -> DROPOUT -> FC(1000)""",
        "VGG-16 (Simonyan & Zisserman 2014, configuration D): 13 CONV layers 3x3 with P=1 that "
        "preserve the size, five 2x2 pools (224 -> 7), then 7x7x512 = 25,088 -> 4096 -> 4096 -> "
        "1000. 138,357,544 parameters, 102,764,544 of them in the first FC layer.",
    ),
    "seed004": (
        """INPUT(32x32x1)
           -> CONV(3,F=5) -> RELU -> POOL
           -> CONV(6,F=5) -> RELU -> POOL
           -> FC(100) -> RELU -> FC(10)""",
        "The network of seed document 004: a 32x32 image, 3 filters 5x5 -> 28x28x3, 2x2 pooling "
        "-> 14x14x3, 6 filters 5x5 -> 10x10x6, pooling -> 5x5x6, flattened to 150 values, FC "
        "with 100 neurons, FC with 10. The seed writes 'stride length = 0'; the sizes it gives "
        "(32 -> 28, 14 -> 10) are those of stride 1. It says 'followed by activation' without "
        "naming one (RELU here) and gives no depth for the input (grayscale here).",
    ),
    "fashion": (
        """INPUT(28x28x1)
           -> CONV(32,F=3,P=1) -> RELU -> POOL
           -> CONV(64,F=3,P=1) -> RELU -> POOL
           -> FC(128) -> RELU -> FC(10)""",
        "The reference network for MNIST and Fashion-MNIST (28x28 grayscale): two 3x3 CONV "
        "layers that preserve the size, each followed by 2x2 pooling (28 -> 14 -> 7), then "
        "7x7x64 = 3,136 -> 128 -> 10.",
    ),
    "fashion-bn": (
        """INPUT(28x28x1)
           -> CONV(32,F=3,P=1) -> RELU -> POOL -> BN
           -> CONV(128,F=3,P=1) -> RELU -> POOL -> BN
           -> FC(256) -> RELU -> DROPOUT(p=0.25) -> FC(10)""",
        "The default network of `convnet train --data fashion`: the reference "
        "network \"fashion\" with batch normalisation after each CONV -> RELU -> POOL stage "
        "(28 -> 14 -> 7), twice the filters in the second CONV, a wider FC (7x7x128 = 6,272 -> "
        "256) and dropout before the classifier. "
        "The BN sits after the pool, where it normalises a quarter of the values, so each "
        "3x3 CONV still runs fused with its RELU and 2x2 POOL. 1,646,090 parameters, 9.1 MMACs "
        "per image. With its recipe (SGD, one-cycle schedule, random crops and flips, 18 "
        "epochs) it reached 93.56% on Fashion-MNIST's 10,000 test images in 7.5 minutes on 2 "
        "cores (93.24% with seed 1).",
    ),
    "cifar10": (
        """INPUT(32x32x3)
           -> [CONV(32,F=3,P=1) -> RELU]*2 -> POOL
           -> [CONV(64,F=3,P=1) -> RELU]*2 -> POOL
           -> FC(256) -> RELU -> FC(10)""",
        "A CIFAR-10 network of the seeds' pattern INPUT -> [[CONV -> RELU]*N -> POOL]*M -> "
        "[FC -> RELU]*K -> FC with N=2, M=2, K=1: 32x32x3 -> 16x16x32 -> 8x8x64 = 4,096 -> "
        "256 -> 10.",
    ),
    "fcn": (
        """INPUT(28x28x1)
           -> CONV(16,F=3,P=1) -> RELU -> POOL
           -> CONV(32,F=3,P=1) -> RELU -> POOL
           -> CONV(64,F=3,P=1) -> RELU
           -> CONV(10,F=1) -> GAP""",
        "A fully convolutional classifier: no FC layer, so it runs on any image size "
        "(build('fcn', input_shape=(H, W, 1))). A 1x1 CONV gives 10 score maps (7x7x10 on a "
        "28x28 input) and global average pooling turns each map into one class score.",
    ),
    "segnet": (
        """INPUT(32x64x1)
           -> CONV(16,F=3,P=1) -> BN -> RELU -> POOL
           -> CONV(32,F=3,P=1) -> BN -> RELU -> POOL
           -> CONV(48,F=3,P=2,dilation=2) -> BN -> RELU
           -> CONV(48,F=3,P=4,dilation=4) -> BN -> RELU
           -> CONV(64,F=3,P=2,dilation=2) -> BN -> RELU
           -> DECONV(32,F=2,S=2) -> BN -> RELU
           -> DECONV(16,F=2,S=2) -> RELU
           -> CONV(11,F=1)""",
        "An encoder-decoder for segmentation, the default network of `convnet train --data "
        "fashion-seg` (two Fashion-MNIST items on a 32x64 canvas, 11 pixel classes: background "
        "and the 10 item classes). CONV/POOL shrink 32x64 to 8x16; dilated 3x3 CONVs (dilation "
        "2, 4, 2, padded to keep 8x16) widen what each unit sees to more than an item without "
        "shrinking further (each output pixel's receptive field is 77 pixels); two stride-2 "
        "DECONVs (F=2, S=2: (8 - 1)*2 + 2 = 16, then 32) bring the volume back to 32x64, "
        "and a 1x1 CONV gives 11 class scores at every pixel: the output is 32x64x11.",
    ),
    "digits": (
        """INPUT(8x8x1)
           -> CONV(16,F=3,P=1) -> RELU
           -> CONV(32,F=3,P=1) -> RELU -> POOL
           -> FC(64) -> RELU -> FC(10)""",
        "The default network for the built-in 8x8 UCI handwritten digits: small enough to "
        "train in seconds on a CPU. 8x8x1 -> 8x8x16 -> 8x8x32 -> 4x4x32 = 512 -> 64 -> 10.",
    ),
    "resnet-cifar": (
        """INPUT(32x32x3)
        -> CONV(16,F=3,P=1,bias=false) -> BN -> RELU
        -> [RES[CONV(16,F=3,P=1,bias=false) -> BN -> RELU -> CONV(16,F=3,P=1,bias=false) -> BN]
               -> RELU]*3
        -> RES[CONV(32,F=3,S=2,P=1,bias=false,floor=true) -> BN -> RELU
               -> CONV(32,F=3,P=1,bias=false) -> BN] -> RELU -> [RES[CONV(32,F=3,P=1,bias=false)
               -> BN -> RELU -> CONV(32,F=3,P=1,bias=false) -> BN] -> RELU]*2
        -> RES[CONV(64,F=3,S=2,P=1,bias=false,floor=true) -> BN -> RELU
               -> CONV(64,F=3,P=1,bias=false) -> BN] -> RELU -> [RES[CONV(64,F=3,P=1,bias=false)
               -> BN -> RELU -> CONV(64,F=3,P=1,bias=false) -> BN] -> RELU]*2
        -> GAP -> FC(10)""",
        "ResNet-20 for 32x32 images (He et al. 2016, section 4.2): a 3x3 CONV to 16, three stages "
        "of three basic blocks with 16, 32 and 64 filters (32x32 -> 16x16 -> 8x8), GAP and "
        "FC(10). The two blocks that change the size and depth project their shortcut with a 1x1 "
        "CONV and BN (the paper's option B; option A pads with zeros). 272,474 parameters, 40.8 "
        "MMACs. Build it for other sizes with input_shape, e.g. 28x28x1 for Fashion-MNIST.",
    ),
    "resnet18": (
        """INPUT(224x224x3)
        -> CONV(64,F=7,S=2,P=3,bias=false,floor=true) -> BN -> RELU
               -> POOL(F=3,S=2,P=1,floor=true)
        -> [RES[CONV(64,F=3,P=1,bias=false) -> BN -> RELU -> CONV(64,F=3,P=1,bias=false) -> BN]
               -> RELU]*2
        -> RES[CONV(128,F=3,S=2,P=1,bias=false,floor=true) -> BN -> RELU
               -> CONV(128,F=3,P=1,bias=false) -> BN] -> RELU
        -> RES[CONV(128,F=3,P=1,bias=false) -> BN -> RELU -> CONV(128,F=3,P=1,bias=false) -> BN]
               -> RELU
        -> RES[CONV(256,F=3,S=2,P=1,bias=false,floor=true) -> BN -> RELU
               -> CONV(256,F=3,P=1,bias=false) -> BN] -> RELU
        -> RES[CONV(256,F=3,P=1,bias=false) -> BN -> RELU -> CONV(256,F=3,P=1,bias=false) -> BN]
               -> RELU
        -> RES[CONV(512,F=3,S=2,P=1,bias=false,floor=true) -> BN -> RELU
               -> CONV(512,F=3,P=1,bias=false) -> BN] -> RELU
        -> RES[CONV(512,F=3,P=1,bias=false) -> BN -> RELU -> CONV(512,F=3,P=1,bias=false) -> BN]
               -> RELU
        -> GAP -> FC(1000)""",
        "ResNet-18 (He et al. 2016), torchvision's layout: a 7x7 stride-2 CONV and a 3x3 stride-2 "
        "POOL (224 -> 112 -> 56), then four stages of two basic blocks (two 3x3 CONVs without "
        "bias, each followed by BN, added to the block's input), 64, 128, 256 and 512 filters, "
        "each stage after the first halving the size with a stride-2 CONV (56 -> 28 -> 14 -> 7); "
        "where a block changes the size and depth, RES[...] projects the shortcut with a 1x1 "
        "stride-2 CONV and a BN, as torchvision's downsample does. GAP, then FC(1000). The "
        "strided layers need floor=true: (56 - 3 + 2*1)/2 + 1 = 28.5, which PyTorch floors to 28. "
        "11,689,512 parameters, 1.81 GMACs, as torchvision's resnet18.",
    ),
    "resnet34": (
        """INPUT(224x224x3)
        -> CONV(64,F=7,S=2,P=3,bias=false,floor=true) -> BN -> RELU
               -> POOL(F=3,S=2,P=1,floor=true)
        -> [RES[CONV(64,F=3,P=1,bias=false) -> BN -> RELU -> CONV(64,F=3,P=1,bias=false) -> BN]
               -> RELU]*3
        -> RES[CONV(128,F=3,S=2,P=1,bias=false,floor=true) -> BN -> RELU
               -> CONV(128,F=3,P=1,bias=false) -> BN] -> RELU
        -> [RES[CONV(128,F=3,P=1,bias=false) -> BN -> RELU -> CONV(128,F=3,P=1,bias=false)
               -> BN] -> RELU]*3
        -> RES[CONV(256,F=3,S=2,P=1,bias=false,floor=true) -> BN -> RELU
               -> CONV(256,F=3,P=1,bias=false) -> BN] -> RELU
        -> [RES[CONV(256,F=3,P=1,bias=false) -> BN -> RELU -> CONV(256,F=3,P=1,bias=false)
               -> BN] -> RELU]*5
        -> RES[CONV(512,F=3,S=2,P=1,bias=false,floor=true) -> BN -> RELU
               -> CONV(512,F=3,P=1,bias=false) -> BN] -> RELU
        -> [RES[CONV(512,F=3,P=1,bias=false) -> BN -> RELU -> CONV(512,F=3,P=1,bias=false)
               -> BN] -> RELU]*2
        -> GAP -> FC(1000)""",
        "ResNet-34 (He et al. 2016), torchvision's layout: as resnet18 with 3, 4, 6 and 3 basic "
        "blocks per stage. 21,797,672 parameters, 3.66 GMACs, as torchvision's resnet34.",
    ),
    "resnet50": (
        """INPUT(224x224x3)
        -> CONV(64,F=7,S=2,P=3,bias=false,floor=true) -> BN -> RELU
               -> POOL(F=3,S=2,P=1,floor=true)
        -> [RES[CONV(64,F=1,bias=false) -> BN -> RELU -> CONV(64,F=3,P=1,bias=false) -> BN
               -> RELU -> CONV(256,F=1,bias=false) -> BN] -> RELU]*3
        -> RES[CONV(128,F=1,bias=false) -> BN -> RELU
               -> CONV(128,F=3,S=2,P=1,bias=false,floor=true) -> BN -> RELU
               -> CONV(512,F=1,bias=false) -> BN] -> RELU
        -> [RES[CONV(128,F=1,bias=false) -> BN -> RELU -> CONV(128,F=3,P=1,bias=false) -> BN
               -> RELU -> CONV(512,F=1,bias=false) -> BN] -> RELU]*3
        -> RES[CONV(256,F=1,bias=false) -> BN -> RELU
               -> CONV(256,F=3,S=2,P=1,bias=false,floor=true) -> BN -> RELU
               -> CONV(1024,F=1,bias=false) -> BN] -> RELU
        -> [RES[CONV(256,F=1,bias=false) -> BN -> RELU -> CONV(256,F=3,P=1,bias=false) -> BN
               -> RELU -> CONV(1024,F=1,bias=false) -> BN] -> RELU]*5
        -> RES[CONV(512,F=1,bias=false) -> BN -> RELU
               -> CONV(512,F=3,S=2,P=1,bias=false,floor=true) -> BN -> RELU
               -> CONV(2048,F=1,bias=false) -> BN] -> RELU
        -> [RES[CONV(512,F=1,bias=false) -> BN -> RELU -> CONV(512,F=3,P=1,bias=false) -> BN
               -> RELU -> CONV(2048,F=1,bias=false) -> BN] -> RELU]*2
        -> GAP -> FC(1000)""",
        "ResNet-50 (He et al. 2016), torchvision's layout (v1.5: the stride on the 3x3 CONV): 3, "
        "4, 6 and 3 bottleneck blocks (1x1 CONV to w, 3x3 CONV, 1x1 CONV to 4w, each with BN) per "
        "stage, w = 64, 128, 256, 512; the first block of each stage projects its shortcut (1x1 "
        "CONV and BN) because it changes the depth (and, from the second stage on, the size). "
        "25,557,032 parameters and 4.09 GMACs, as torchvision's resnet50.",
    ),
    "mobilenet_v2": (
        """INPUT(224x224x3)
        -> CONV(32,F=3,S=2,P=1,bias=false,floor=true) -> BN -> RELU6
        -> DWCONV(F=3,P=1,bias=false) -> BN -> RELU6 -> CONV(16,F=1,bias=false) -> BN
        -> CONV(96,F=1,bias=false) -> BN -> RELU6 -> DWCONV(F=3,S=2,P=1,bias=false,floor=true)
               -> BN -> RELU6 -> CONV(24,F=1,bias=false) -> BN
        -> RES[CONV(144,F=1,bias=false) -> BN -> RELU6 -> DWCONV(F=3,P=1,bias=false) -> BN
               -> RELU6 -> CONV(24,F=1,bias=false) -> BN]
        -> CONV(144,F=1,bias=false) -> BN -> RELU6 -> DWCONV(F=3,S=2,P=1,bias=false,floor=true)
               -> BN -> RELU6 -> CONV(32,F=1,bias=false) -> BN
        -> [RES[CONV(192,F=1,bias=false) -> BN -> RELU6 -> DWCONV(F=3,P=1,bias=false) -> BN
               -> RELU6 -> CONV(32,F=1,bias=false) -> BN]]*2
        -> CONV(192,F=1,bias=false) -> BN -> RELU6 -> DWCONV(F=3,S=2,P=1,bias=false,floor=true)
               -> BN -> RELU6 -> CONV(64,F=1,bias=false) -> BN
        -> [RES[CONV(384,F=1,bias=false) -> BN -> RELU6 -> DWCONV(F=3,P=1,bias=false) -> BN
               -> RELU6 -> CONV(64,F=1,bias=false) -> BN]]*3
        -> CONV(384,F=1,bias=false) -> BN -> RELU6 -> DWCONV(F=3,P=1,bias=false) -> BN -> RELU6
               -> CONV(96,F=1,bias=false) -> BN
        -> [RES[CONV(576,F=1,bias=false) -> BN -> RELU6 -> DWCONV(F=3,P=1,bias=false) -> BN
               -> RELU6 -> CONV(96,F=1,bias=false) -> BN]]*2
        -> CONV(576,F=1,bias=false) -> BN -> RELU6 -> DWCONV(F=3,S=2,P=1,bias=false,floor=true)
               -> BN -> RELU6 -> CONV(160,F=1,bias=false) -> BN
        -> [RES[CONV(960,F=1,bias=false) -> BN -> RELU6 -> DWCONV(F=3,P=1,bias=false) -> BN
               -> RELU6 -> CONV(160,F=1,bias=false) -> BN]]*2
        -> CONV(960,F=1,bias=false) -> BN -> RELU6 -> DWCONV(F=3,P=1,bias=false) -> BN -> RELU6
               -> CONV(320,F=1,bias=false) -> BN
        -> CONV(1280,F=1,bias=false) -> BN -> RELU6 -> GAP -> DROPOUT(p=0.2) -> FC(1000)""",
        "MobileNetV2 (Sandler et al. 2018), torchvision's layout: a 3x3 stride-2 CONV to 32, then "
        "17 inverted residual blocks (a 1x1 CONV expanding the depth t = 6 times, a 3x3 depthwise "
        "CONV, a 1x1 CONV projecting it back, BN after each, RELU6 after the first two); a block "
        "that keeps the size and depth adds its input (RES[...]). Then a 1x1 CONV to 1280, GAP, "
        "DROPOUT and FC(1000). Depthwise separable CONVs cost a fraction of ordinary ones: "
        "3,504,872 parameters and 0.30 GMACs, as torchvision's mobilenet_v2.",
    ),
    "googlenet": (
        """INPUT(224x224x3)
        -> CONV(64,F=7,S=2,P=3,bias=false,floor=true) -> BN(eps=0.001) -> RELU
               -> POOL(F=3,S=2,P=1,floor=true)
        -> CONV(64,F=1,bias=false) -> BN(eps=0.001) -> RELU -> CONV(192,F=3,P=1,bias=false)
               -> BN(eps=0.001) -> RELU -> POOL(F=3,S=2,P=1,floor=true)
        -> CAT[CONV(64,F=1,bias=false) -> BN(eps=0.001) -> RELU
        | CONV(96,F=1,bias=false) -> BN(eps=0.001) -> RELU -> CONV(128,F=3,P=1,bias=false)
               -> BN(eps=0.001) -> RELU
        | CONV(16,F=1,bias=false) -> BN(eps=0.001) -> RELU -> CONV(32,F=3,P=1,bias=false)
               -> BN(eps=0.001) -> RELU
        | POOL(F=3,S=1,P=1) -> CONV(32,F=1,bias=false) -> BN(eps=0.001) -> RELU]
        -> CAT[CONV(128,F=1,bias=false) -> BN(eps=0.001) -> RELU
        | CONV(128,F=1,bias=false) -> BN(eps=0.001) -> RELU -> CONV(192,F=3,P=1,bias=false)
               -> BN(eps=0.001) -> RELU
        | CONV(32,F=1,bias=false) -> BN(eps=0.001) -> RELU -> CONV(96,F=3,P=1,bias=false)
               -> BN(eps=0.001) -> RELU
        | POOL(F=3,S=1,P=1) -> CONV(64,F=1,bias=false) -> BN(eps=0.001) -> RELU]
        -> POOL(F=3,S=2,P=1,floor=true)
        -> CAT[CONV(192,F=1,bias=false) -> BN(eps=0.001) -> RELU
        | CONV(96,F=1,bias=false) -> BN(eps=0.001) -> RELU -> CONV(208,F=3,P=1,bias=false)
               -> BN(eps=0.001) -> RELU
        | CONV(16,F=1,bias=false) -> BN(eps=0.001) -> RELU -> CONV(48,F=3,P=1,bias=false)
               -> BN(eps=0.001) -> RELU
        | POOL(F=3,S=1,P=1) -> CONV(64,F=1,bias=false) -> BN(eps=0.001) -> RELU]
        -> CAT[CONV(160,F=1,bias=false) -> BN(eps=0.001) -> RELU
        | CONV(112,F=1,bias=false) -> BN(eps=0.001) -> RELU -> CONV(224,F=3,P=1,bias=false)
               -> BN(eps=0.001) -> RELU
        | CONV(24,F=1,bias=false) -> BN(eps=0.001) -> RELU -> CONV(64,F=3,P=1,bias=false)
               -> BN(eps=0.001) -> RELU
        | POOL(F=3,S=1,P=1) -> CONV(64,F=1,bias=false) -> BN(eps=0.001) -> RELU]
        -> CAT[CONV(128,F=1,bias=false) -> BN(eps=0.001) -> RELU
        | CONV(128,F=1,bias=false) -> BN(eps=0.001) -> RELU -> CONV(256,F=3,P=1,bias=false)
               -> BN(eps=0.001) -> RELU
        | CONV(24,F=1,bias=false) -> BN(eps=0.001) -> RELU -> CONV(64,F=3,P=1,bias=false)
               -> BN(eps=0.001) -> RELU
        | POOL(F=3,S=1,P=1) -> CONV(64,F=1,bias=false) -> BN(eps=0.001) -> RELU]
        -> CAT[CONV(112,F=1,bias=false) -> BN(eps=0.001) -> RELU
        | CONV(144,F=1,bias=false) -> BN(eps=0.001) -> RELU -> CONV(288,F=3,P=1,bias=false)
               -> BN(eps=0.001) -> RELU
        | CONV(32,F=1,bias=false) -> BN(eps=0.001) -> RELU -> CONV(64,F=3,P=1,bias=false)
               -> BN(eps=0.001) -> RELU
        | POOL(F=3,S=1,P=1) -> CONV(64,F=1,bias=false) -> BN(eps=0.001) -> RELU]
        -> CAT[CONV(256,F=1,bias=false) -> BN(eps=0.001) -> RELU
        | CONV(160,F=1,bias=false) -> BN(eps=0.001) -> RELU -> CONV(320,F=3,P=1,bias=false)
               -> BN(eps=0.001) -> RELU
        | CONV(32,F=1,bias=false) -> BN(eps=0.001) -> RELU -> CONV(128,F=3,P=1,bias=false)
               -> BN(eps=0.001) -> RELU
        | POOL(F=3,S=1,P=1) -> CONV(128,F=1,bias=false) -> BN(eps=0.001) -> RELU]
        -> POOL(F=2,S=2)
        -> CAT[CONV(256,F=1,bias=false) -> BN(eps=0.001) -> RELU
        | CONV(160,F=1,bias=false) -> BN(eps=0.001) -> RELU -> CONV(320,F=3,P=1,bias=false)
               -> BN(eps=0.001) -> RELU
        | CONV(32,F=1,bias=false) -> BN(eps=0.001) -> RELU -> CONV(128,F=3,P=1,bias=false)
               -> BN(eps=0.001) -> RELU
        | POOL(F=3,S=1,P=1) -> CONV(128,F=1,bias=false) -> BN(eps=0.001) -> RELU]
        -> CAT[CONV(384,F=1,bias=false) -> BN(eps=0.001) -> RELU
        | CONV(192,F=1,bias=false) -> BN(eps=0.001) -> RELU -> CONV(384,F=3,P=1,bias=false)
               -> BN(eps=0.001) -> RELU
        | CONV(48,F=1,bias=false) -> BN(eps=0.001) -> RELU -> CONV(128,F=3,P=1,bias=false)
               -> BN(eps=0.001) -> RELU
        | POOL(F=3,S=1,P=1) -> CONV(128,F=1,bias=false) -> BN(eps=0.001) -> RELU]
        -> GAP -> DROPOUT(p=0.2) -> FC(1000)""",
        "GoogLeNet (Szegedy et al. 2014) in torchvision's layout (BN after each CONV, eps = "
        "0.001; the 5x5 branch as a 3x3, as torchvision has it; no auxiliary classifiers): nine "
        "Inception blocks, each CAT[1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 | 3x3 POOL -> 1x1] stacking its "
        "branches along depth (192 -> 256 -> 480 -> ... -> 1024). torchvision's ceil_mode pools "
        "are written here as padded pools with floor=true, which give the same sizes (112 -> 56 "
        "-> 28 -> 14). 6,624,904 parameters, as torchvision's googlenet without its auxiliary "
        "heads.",
    ),
}

#: Spec text of every named architecture.
ZOO: dict[str, str] = {name: text for name, (text, _) in _ENTRIES.items()}


def zoo_names() -> list[str]:
    """Names of the zoo's architectures, smallest idea first as a course would show them."""
    return list(ZOO)


def get(name: str) -> str:
    """Spec text of a zoo architecture (name case-insensitive); :class:`SpecError` if unknown."""
    key = str(name).strip().lower()
    if key not in ZOO:
        close = difflib.get_close_matches(key, list(ZOO), 1, 0.6)
        dym = f" Did you mean {close[0]!r}?" if close else ""
        raise SpecError(f"no zoo architecture named {name!r}.{dym} Zoo: {', '.join(ZOO)}")
    return ZOO[key]


def describe(name: str) -> str:
    """What a zoo architecture is and where its numbers come from."""
    get(name)
    return _ENTRIES[str(name).strip().lower()][1]


__all__ = ["ZOO", "describe", "get", "zoo_names"]
