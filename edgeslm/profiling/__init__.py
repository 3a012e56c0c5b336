"""Deploy to devices and profile there: orchestration over a connector and the device runner."""
