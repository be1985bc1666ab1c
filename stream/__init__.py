"""The streaming RFM scorer. Importing the package first picks compiled core modules when a
current build of them exists (see ``stream.native``)."""

from stream import native as _native

try:
    _native.activate()
except _native.NativeError as exc:
    # a setting, not a bug: one line naming it, as the CLI says every configuration error
    raise SystemExit(f"Error: configuration error: {exc}") from None
