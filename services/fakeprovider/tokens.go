package fakeprovider

// Token estimation. Real providers count with the model's tokenizer; the
// fake uses the documented rule that sluice's own estimator also uses, so
// that in tests the fake and sluice agree exactly on what a call costs and
// any refusal is sluice's doing, not an estimation gap. The rule
// approximates OpenAI's chat accounting (a few tokens of framing per
// message, about four bytes of English per token):
//
//	chat       3 per message + ceil(len(text)/4) per text (per content part
//	           of type "text" when content is an array) + 1 per message
//	           with a name, + 3 for priming the reply
//	messages   (Anthropic) the chat rule, with the system prompt, when
//	           present, counted as one more message and no names
//	embeddings ceil(len(s)/4) per input string, or the count of token ids
//
// Lengths are in bytes.

const (
	tokensPerMessage = 3
	tokensPerName    = 1
	tokensForReply   = 3
)

// textTokens is the estimate for one piece of text: ceil(len/4).
func textTokens(s string) int64 {
	return (int64(len(s)) + 3) / 4
}

// promptMessage is what the estimate needs of a chat message.
type promptMessage struct {
	texts []string // the string content, or the text parts
	named bool
}

// chatPromptTokens estimates the prompt tokens of a chat request.
func chatPromptTokens(msgs []promptMessage) int64 {
	n := int64(tokensForReply)
	for _, m := range msgs {
		n += tokensPerMessage
		for _, t := range m.texts {
			n += textTokens(t)
		}
		if m.named {
			n += tokensPerName
		}
	}
	return n
}

// embeddingInput is one input of an embeddings request: a string, or token
// ids already counted by the caller.
type embeddingInput struct {
	text   string
	ids    []int64
	isText bool
}

func (in embeddingInput) tokens() int64 {
	if in.isText {
		return textTokens(in.text)
	}
	return int64(len(in.ids))
}

// embeddingTokens estimates the prompt tokens of an embeddings request.
func embeddingTokens(inputs []embeddingInput) int64 {
	var n int64
	for _, in := range inputs {
		n += in.tokens()
	}
	return n
}
