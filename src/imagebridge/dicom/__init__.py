"""pydicom helpers: attributes, DICOM JSON, frame offsets, transfer syntaxes, rendering."""
