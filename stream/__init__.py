"""The streaming RFM scorer. Importing the package first picks compiled core modules when a
current build of them exists (see ``stream.native``)."""

from stream import native as _native

_native.activate()
