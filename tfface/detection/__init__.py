"""Finding faces in whole pictures: the BlazeFace detector (:mod:`tfface.detection.blazeface`) and
the crops framed from its detections the way the network was trained (:mod:`tfface.detection.crops`)."""
