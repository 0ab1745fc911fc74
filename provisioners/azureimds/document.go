package azureimds

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// document is the signed content of Azure IMDS attested data
// (/metadata/attested/document), compact JSON such as:
//
//	{"licenseType":"","nonce":"1234567890",
//	 "plan":{"name":"","product":"","publisher":""},
//	 "sku":"22_04-lts-gen2",
//	 "subscriptionId":"8d10da13-8125-4ba9-a717-bf7490507b3d",
//	 "timeStamp":{"createdOn":"11/30/25 21:19:19 -0000",
//	              "expiresOn":"12/01/25 03:19:19 -0000"},
//	 "vmId":"02aab8a4-74ef-476e-8182-f6d2ba4166a6"}
//
// Fields Azure may add are ignored.
type document struct {
	LicenseType string `json:"licenseType"`
	Nonce       string `json:"nonce"`
	Plan        struct {
		Name      string `json:"name"`
		Product   string `json:"product"`
		Publisher string `json:"publisher"`
	} `json:"plan"`
	SKU            string `json:"sku"`
	SubscriptionID string `json:"subscriptionId"`
	TimeStamp      struct {
		CreatedOn string `json:"createdOn"`
		ExpiresOn string `json:"expiresOn"`
	} `json:"timeStamp"`
	VMID string `json:"vmId"`

	created, expires time.Time
}

// timeLayout is the format of timeStamp's fields, "11/30/25 21:19:19 -0000".
const timeLayout = "01/02/06 15:04:05 -0700"

// guidRE matches a GUID, Azure's form of subscription and VM IDs.
var guidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// freeText matches the optional descriptive fields (sku, licenseType,
// plan) that become claims: no path separators or odd characters, at most
// 128 bytes. A value that does not match is left out of the claims.
var freeText = regexp.MustCompile(`^[A-Za-z0-9_.:+@-][A-Za-z0-9 _.:+@-]{0,127}$`)

// parseDocument decodes and checks the signed content.
func parseDocument(b []byte) (*document, error) {
	var d document
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("malformed attested document: %v", err)
	}
	if !guidRE.MatchString(d.VMID) {
		return nil, fmt.Errorf("attested document: vmId %q is not a GUID", d.VMID)
	}
	if !guidRE.MatchString(d.SubscriptionID) {
		return nil, fmt.Errorf("attested document: subscriptionId %q is not a GUID", d.SubscriptionID)
	}
	d.VMID, d.SubscriptionID = strings.ToLower(d.VMID), strings.ToLower(d.SubscriptionID)
	var err error
	if d.created, err = time.Parse(timeLayout, d.TimeStamp.CreatedOn); err != nil {
		return nil, fmt.Errorf("attested document: timeStamp.createdOn %q is not a time", d.TimeStamp.CreatedOn)
	}
	if d.expires, err = time.Parse(timeLayout, d.TimeStamp.ExpiresOn); err != nil {
		return nil, fmt.Errorf("attested document: timeStamp.expiresOn %q is not a time", d.TimeStamp.ExpiresOn)
	}
	if !d.expires.After(d.created) {
		return nil, fmt.Errorf("attested document: expires (%s) before it was created (%s)", d.TimeStamp.ExpiresOn, d.TimeStamp.CreatedOn)
	}
	return &d, nil
}

// claims are the attested facts. Optional fields that are empty or odd are
// left out, so that a template using one fails rather than rendering an
// empty or surprising segment.
func (d *document) claims() map[string]string {
	c := map[string]string{
		ClaimVMID:           d.VMID,
		ClaimSubscriptionID: d.SubscriptionID,
	}
	for k, v := range map[string]string{
		ClaimSKU: d.SKU, ClaimLicenseType: d.LicenseType,
		ClaimPlanName: d.Plan.Name, ClaimPlanProduct: d.Plan.Product, ClaimPlanPublisher: d.Plan.Publisher,
	} {
		if freeText.MatchString(v) {
			c[k] = v
		}
	}
	return c
}
