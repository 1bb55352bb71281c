"""Expand the carried half-precision ImageNet weights into the file the encoder loads."""
import torch
ck = torch.load(".gpu/effnet16.pt", map_location="cpu", weights_only=True)
state = {k: (v.float() if v.is_floating_point() else v) for k, v in ck["state"].items()}
state.update({k: torch.zeros(shape) for k, shape in ck["fc"].items()})   # replaced by Identity after loading
torch.save(state, "/tmp/efficientnet-lite0.pth")
print("effnet weights", len(state))
