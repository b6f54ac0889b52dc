"""Physical media: IHE PDI file sets written from the archive (``pdi``), ISO 9660 images (``iso``),
and the discovery of DICOM instances on discs, folders, zips and ISO images (``sources``)."""
