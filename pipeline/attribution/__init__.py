"""Attribution of segmentation outputs: scalar targets with frozen masks, captum methods."""
