"""Publisher side: add firmware to a delegated role with the publisher's own key, locally or
by upload to the update server."""
