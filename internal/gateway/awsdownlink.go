package gateway

import (
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/coapgw/coapgw/internal/awsdownlink"
)

// openAWSDownlink opens the downlink from AWS IoT (--iot-downlink-endpoint, with --queue): the
// device API's desired-state changes come from the things' shadows, over MQTT. Its Run starts
// with the other actors; a thing's changed delta notifies its observers.
func (g *Gateway) openAWSDownlink(awsCfg aws.Config) error {
	c := g.cfg.Downlink
	if c.Endpoint == "" {
		return nil
	}
	id := c.ClientID
	if id == "" {
		id = "coapgw-" + g.cfg.Ingest.GatewayID
	}
	dl, err := awsdownlink.New(awsdownlink.Config{
		Endpoint: c.Endpoint, ShadowEndpoint: g.cfg.AWS.Endpoint, ClientID: id,
		CertFile: c.CertFile, KeyFile: c.KeyFile, CAFile: c.CAFile,
		CacheBytes: int64(c.CacheBytes), FetchBudget: c.FetchBudget, FetchRate: float64(c.FetchRate),
		Documents: c.Documents,
	}, awsCfg, func(name string) { g.ingest.NotifyThing(name) }, g.log.With("component", "awsdownlink"), g.reg)
	if err != nil {
		return err
	}
	g.awsDownlink = dl
	return nil
}
