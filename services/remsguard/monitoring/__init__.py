"""The service layer: the one step every path takes for an event (`monitor`), the clock
policies of the paths (`clocks`), and the ports it hands decisions to (`ports`)."""
