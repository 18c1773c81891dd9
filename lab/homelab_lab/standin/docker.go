package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// dockerClient reads the Docker Engine API (containers only), over a unix socket or TCP.
type dockerClient struct {
	endpoint string
	http     *http.Client
	base     string
}

// dockerContainer is one entry of GET /containers/json.
type dockerContainer struct {
	ID      string            `json:"Id"`
	Names   []string          `json:"Names"`
	Image   string            `json:"Image"`
	Created int64             `json:"Created"`
	State   string            `json:"State"`
	Status  string            `json:"Status"`
	Labels  map[string]string `json:"Labels"`
	Ports   []struct {
		PrivatePort int    `json:"PrivatePort"`
		PublicPort  int    `json:"PublicPort"`
		Type        string `json:"Type"`
	} `json:"Ports"`
	HostConfig struct {
		NetworkMode string `json:"NetworkMode"`
	} `json:"HostConfig"`
	NetworkSettings struct {
		Networks map[string]struct {
			IPAddress string `json:"IPAddress"`
			NetworkID string `json:"NetworkID"`
		} `json:"Networks"`
	} `json:"NetworkSettings"`
}

// newDockerClient reaches an endpoint given as unix:///path, tcp://host:port or http://host:port.
func newDockerClient(endpoint string) *dockerClient {
	c := &dockerClient{endpoint: endpoint}
	transport := &http.Transport{Proxy: nil, MaxIdleConns: 2, IdleConnTimeout: 30 * time.Second}
	if path, ok := cutPrefix(endpoint, "unix://"); ok {
		transport.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}
		c.base = "http://docker"
	} else {
		hostport := strings.TrimPrefix(strings.TrimPrefix(endpoint, "tcp://"), "http://")
		c.base = "http://" + hostport
	}
	c.http = &http.Client{Transport: transport, Timeout: 5 * time.Second}
	return c
}

func cutPrefix(s, prefix string) (string, bool) {
	if strings.HasPrefix(s, prefix) {
		return s[len(prefix):], true
	}
	return s, false
}

// containers lists the running containers.
func (c *dockerClient) containers() ([]dockerContainer, error) {
	resp, err := c.http.Get(c.base + "/containers/json")
	if err != nil {
		return nil, fmt.Errorf("docker engine at %s: %w", c.endpoint, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return nil, fmt.Errorf("docker engine at %s: %w", c.endpoint, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("docker engine at %s: GET /containers/json: %s: %s", c.endpoint, resp.Status, strings.TrimSpace(string(body)))
	}
	var out []dockerContainer
	if err := json.Unmarshal(body, &out); err != nil {
		return nil, fmt.Errorf("docker engine at %s: %w", c.endpoint, err)
	}
	return out, nil
}
