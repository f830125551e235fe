"""Dataset preparation: ScanNet .sens -> exported frames, ScanNet / S3DIS -> labelled scene folders (`ppkt prepare`)."""
