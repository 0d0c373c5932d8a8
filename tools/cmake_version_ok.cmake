# Exits non-zero when the cmake on PATH is older than what hdf5-metno's bundled HDF5 needs.
if(CMAKE_VERSION VERSION_LESS 3.26)
  message(FATAL_ERROR "cmake ${CMAKE_VERSION} < 3.26")
endif()
