package config

// validateCompat checks the switches that make the gateway a drop-in replacement for the 2018
// CoAP-to-AWS-IoT ingestor (serve only; --seed-shadow is a plain switch in every role).
func (c *Config) validateCompat(v *validator) {
	switch c.Compat.Device {
	case "off", "seed":
	default:
		v.bad("compat %q: want off or seed", c.Compat.Device)
	}
	switch c.Compat.Envelope {
	case "coapgw":
	case "seed":
		if c.AWS.Queue == "" {
			v.bad("envelope seed needs --queue: only the forwarder writes queue messages")
		}
	default:
		v.bad("envelope %q: want coapgw or seed", c.Compat.Envelope)
	}
}
