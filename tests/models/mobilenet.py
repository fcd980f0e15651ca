"""MobileNetV2-style network: inverted residuals with depthwise convs, relu6, and a hardswish head."""

from torch import nn

from convnet import randomize_batchnorm


def conv_bn(cin: int, cout: int, kernel: int, stride: int, groups: int = 1, act=nn.ReLU6):
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, act()) if act else nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        self.body = nn.Sequential(
            conv_bn(cin, hidden, 1, 1),
            conv_bn(hidden, hidden, 3, stride, groups=hidden),  # depthwise
            conv_bn(hidden, cout, 1, 1, act=None),
        )

    def forward(self, x):
        return x + self.body(x) if self.use_residual else self.body(x)


class MobileNetV2(nn.Module):
    # (expansion, channels, repeats, stride), a narrowed version of the paper's table
    SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 2, 2), (6, 96, 2, 1), (6, 160, 2, 2)]

    def __init__(self, classes: int = 100):
        super().__init__()
        layers, cin = [conv_bn(3, 32, 3, 2)], 32
        for expand, cout, repeats, stride in self.SETTINGS:
            for i in range(repeats):
                layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
                cin = cout
        layers.append(conv_bn(cin, 320, 1, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(320, classes))

    def forward(self, image):
        return self.classifier(self.features(image))


def build_model():
    model = MobileNetV2()
    randomize_batchnorm(model)
    return model
