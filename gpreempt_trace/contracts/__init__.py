"""The contracts with the kernel and the package's data files: the KFD uapi, where tracers/, queries/ and kernel/ live."""
