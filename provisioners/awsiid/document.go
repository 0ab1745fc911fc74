package awsiid

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"time"
)

// document is the part of an instance identity document the provisioner
// reads. The real document has more (architecture, billingProducts,
// kernelId, marketplaceProductCodes, ramdiskId, version...), which is
// ignored:
//
//	{
//	  "accountId" : "123456789012",
//	  "architecture" : "x86_64",
//	  "availabilityZone" : "us-west-2b",
//	  "billingProducts" : null,
//	  "devpayProductCodes" : null,
//	  "marketplaceProductCodes" : null,
//	  "imageId" : "ami-5fb8c835",
//	  "instanceId" : "i-1234567890abcdef0",
//	  "instanceType" : "t2.micro",
//	  "kernelId" : null,
//	  "pendingTime" : "2016-11-19T16:32:11Z",
//	  "privateIp" : "10.158.112.84",
//	  "ramdiskId" : null,
//	  "region" : "us-west-2",
//	  "version" : "2017-09-30"
//	}
type document struct {
	AccountID        string `json:"accountId"`
	AvailabilityZone string `json:"availabilityZone"`
	ImageID          string `json:"imageId"`
	InstanceID       string `json:"instanceId"`
	InstanceType     string `json:"instanceType"`
	PendingTime      string `json:"pendingTime"`
	PrivateIP        string `json:"privateIp"`
	Region           string `json:"region"`

	pending time.Time
}

// MaxDocumentSize bounds the document. A real one is about 500 bytes.
const MaxDocumentSize = 8 << 10

var (
	instanceIDRE   = regexp.MustCompile(`^i-([0-9a-f]{8}|[0-9a-f]{17})$`)
	zoneRE         = regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)+$`)
	imageIDRE      = regexp.MustCompile(`^ami-[0-9a-f]{8,17}$`)
	instanceTypeRE = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,63}$`)
)

// parseDocument decodes the document and checks its region, which picks
// the certificate. The rest is checked by validate once the signature is.
func parseDocument(b []byte) (*document, error) {
	if len(b) > MaxDocumentSize {
		return nil, fmt.Errorf("document of %d bytes is larger than %d", len(b), MaxDocumentSize)
	}
	var d document
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("malformed document: %v", err)
	}
	if !regionRE.MatchString(d.Region) {
		return nil, fmt.Errorf("document: region %q is not an AWS region name", d.Region)
	}
	return &d, nil
}

// validate checks the fields that become claims, so that nothing odd
// reaches a SPIFFE ID template, and parses pendingTime.
func (d *document) validate() error {
	switch {
	case !accountRE.MatchString(d.AccountID):
		return fmt.Errorf("document: accountId %q is not a 12-digit account ID", d.AccountID)
	case !instanceIDRE.MatchString(d.InstanceID):
		return fmt.Errorf("document: instanceId %q is not an instance ID", d.InstanceID)
	case !zoneRE.MatchString(d.AvailabilityZone) || !strings.HasPrefix(d.AvailabilityZone, d.Region):
		return fmt.Errorf("document: availabilityZone %q is not a zone of %s", d.AvailabilityZone, d.Region)
	case !imageIDRE.MatchString(d.ImageID):
		return fmt.Errorf("document: imageId %q is not an AMI ID", d.ImageID)
	case !instanceTypeRE.MatchString(d.InstanceType):
		return fmt.Errorf("document: instanceType %q is not an instance type", d.InstanceType)
	case d.PendingTime == "":
		return errors.New("document: no pendingTime")
	}
	t, err := time.Parse(time.RFC3339, d.PendingTime)
	if err != nil {
		return fmt.Errorf("document: pendingTime %q is not an RFC 3339 time", d.PendingTime)
	}
	d.pending = t
	if d.PrivateIP != "" {
		ip, err := netip.ParseAddr(d.PrivateIP)
		if err != nil || ip.Zone() != "" {
			return fmt.Errorf("document: privateIp %q is not an IP address", d.PrivateIP)
		}
		d.PrivateIP = ip.String()
	}
	return nil
}

// claims are the attested facts.
func (d *document) claims() map[string]string {
	c := map[string]string{
		ClaimAccount:          d.AccountID,
		ClaimRegion:           d.Region,
		ClaimInstanceID:       d.InstanceID,
		ClaimAvailabilityZone: d.AvailabilityZone,
		ClaimImageID:          d.ImageID,
		ClaimInstanceType:     d.InstanceType,
	}
	if d.PrivateIP != "" {
		c[ClaimPrivateIP] = d.PrivateIP
	}
	return c
}
