package main

import (
	"time"

	"github.com/gravitycar/tollgate/internal/config"
)

// settings is everything the worker reads from its environment.
type settings struct {
	config.Common
	MetricsAddr string
	Concurrency int
	AckWait     time.Duration // how long JetStream waits for an ack before redelivering
	MaxDeliver  int           // attempts before a query is failed for good
	QueryTTL    time.Duration

	OpenAIKey       string
	OpenAIBaseURL   string
	OpenAIModel     string
	OpenAIMaxTokens int
	PricingFile     string
	AnswerTimeout   time.Duration
	AnswerCacheTTL  time.Duration
	EmbeddingModel  string

	WeaviateURL        string
	WeaviateAPIKey     string
	WeaviateCollection string
}

func loadSettings(getenv func(string) string) (settings, error) {
	env := config.New(getenv)
	s := settings{
		Common:          env.Common(),
		MetricsAddr:     env.String("METRICS_ADDR", "127.0.0.1:9090"),
		Concurrency:     env.IntRange("WORKER_CONCURRENCY", 8, 1, 1024),
		AckWait:         env.Duration("WORKER_ACK_WAIT", 30*time.Second),
		MaxDeliver:      env.IntRange("WORKER_MAX_DELIVER", 5, 1, 100),
		QueryTTL:        env.Duration("QUERY_TTL", 24*time.Hour),
		OpenAIKey:       env.String("OPENAI_API_KEY", ""),
		OpenAIBaseURL:   env.String("OPENAI_BASE_URL", "https://api.openai.com/v1"),
		OpenAIModel:     env.String("OPENAI_MODEL", "gpt-4o-mini"),
		OpenAIMaxTokens: env.IntRange("OPENAI_MAX_TOKENS", 512, 1, 1_000_000),
		PricingFile:     env.String("PRICING_FILE", ""),
		AnswerTimeout:   env.Duration("WORKER_ANSWER_TIMEOUT", 2*time.Minute),
		AnswerCacheTTL:  env.Duration("ANSWER_CACHE_TTL", 24*time.Hour),
		EmbeddingModel:  env.String("OPENAI_EMBEDDING_MODEL", ""),

		WeaviateURL:        env.String("WEAVIATE_URL", ""),
		WeaviateAPIKey:     env.String("WEAVIATE_API_KEY", ""),
		WeaviateCollection: env.String("WEAVIATE_COLLECTION", "Chunk"),
	}
	if s.EmbeddingModel != "" && s.OpenAIKey == "" {
		env.Fail("OPENAI_EMBEDDING_MODEL", s.EmbeddingModel, "needs OPENAI_API_KEY (embeddings come from the OpenAI-compatible endpoint)")
	}
	if s.AckWait < time.Second {
		env.Fail("WORKER_ACK_WAIT", s.AckWait.String(), "must be at least 1s")
	}
	if err := env.Err(); err != nil {
		return settings{}, err
	}
	return s, nil
}
