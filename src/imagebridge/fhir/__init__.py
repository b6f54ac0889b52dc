"""FHIR R4 (4.0.1) at /fhir: ImagingStudy built live from the archive index, Patient, Endpoint, discovery."""
