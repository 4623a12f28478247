# Code generation for api/ (filled in by the API work).
.PHONY: generate check-generate
generate:
	@echo "generate: nothing yet"
check-generate:
	@true
