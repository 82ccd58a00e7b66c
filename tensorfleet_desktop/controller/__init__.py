"""The controller core: fleet, scheduler, jobs and ControllerService. Never imports Qt."""
