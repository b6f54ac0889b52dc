"""DICOMweb (PS3.18): STOW-RS, QIDO-RS, WADO-RS as thin adapters over the services."""
