"""What the transfer checks need that the starter leaves for the student to find (an answer: never
released, grader.testing.official_for)."""

# The top-level parts of a ResNet each variant trains, as the statement gives them.
PARTS = {
    "last_layer": ("fc",),
    "last_layers": ("layer4", "fc"),
    "all_layers": ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc"),
}
