package mdtest

import (
	"fmt"
	"regexp"
	"strings"
)

// Page is what an example's README says to a test: the examples it requires (link targets as
// written), the bash blocks of its Run section and those of its Cleanup section.
type Page struct {
	Requires []string
	Run      []Step
	Cleanup  []Step
	// HasRun is false for a README that is no example (an index of examples, say).
	HasRun bool
}

// link is a Markdown inline link; its target ends at the first space (a title may follow).
var link = regexp.MustCompile(`\[[^\]]*\]\(\s*([^)\s]+)[^)]*\)`)

// Parse reads an example's README in NSM's layout: headings (of any level) named Requires, Run
// and Cleanup, each running until the next heading of its level or above; every ```bash block
// of Run or Cleanup is a step; every relative link of Requires names an example that must run
// first. Blocks of other languages and prose are documentation only. name is used in errors.
func Parse(name string, src []byte) (*Page, error) {
	p := &Page{}
	var (
		section      string // "", "requires", "run", "cleanup" or "other"
		sectionLevel int
		seen         = map[string]int{}
		fence        string // the opening fence of the block we are in, "" outside one
		isStep       bool
		block        []string
		blockLine    int
	)
	for i, line := range strings.Split(string(src), "\n") {
		n := i + 1
		line = strings.TrimSuffix(line, "\r")
		trimmed := strings.TrimLeft(line, " ")
		indent := len(line) - len(trimmed)
		if fence != "" {
			if indent < 4 && isClosing(strings.TrimRight(trimmed, " \t"), fence) {
				if isStep {
					script := strings.TrimSpace(strings.Join(block, "\n"))
					if script == "" {
						return nil, fmt.Errorf("mdtest: %s line %d: the bash block is empty: remove it or give it a command", name, blockLine)
					}
					step := Step{Line: blockLine, Script: script}
					if section == "run" {
						p.Run = append(p.Run, step)
					} else {
						p.Cleanup = append(p.Cleanup, step)
					}
				}
				fence, block = "", nil
				continue
			}
			if isStep {
				block = append(block, line)
			}
			continue
		}
		if indent >= 4 {
			continue
		}
		if f, info, ok := opening(trimmed); ok {
			fence, blockLine, block = f, n, nil
			isStep = (section == "run" || section == "cleanup") && info == "bash"
			continue
		}
		if level, title, ok := heading(trimmed); ok {
			if section != "" && section != "other" && level > sectionLevel {
				continue // a subheading stays in its section
			}
			section, sectionLevel = "other", level
			switch key := strings.ToLower(title); key {
			case "requires", "run", "cleanup":
				if first, dup := seen[key]; dup {
					return nil, fmt.Errorf("mdtest: %s line %d: a second %q section (the first is at line %d): merge them", name, n, title, first)
				}
				seen[key] = n
				section = key
				p.HasRun = p.HasRun || key == "run"
			case "includes":
				return nil, fmt.Errorf("mdtest: %s line %d: an Includes section is not supported: list the examples to run first under Requires", name, n)
			}
			continue
		}
		if section == "requires" {
			for _, m := range link.FindAllStringSubmatch(line, -1) {
				if target := m[1]; !strings.Contains(target, "://") && !strings.HasPrefix(target, "#") {
					p.Requires = append(p.Requires, target)
				}
			}
		}
	}
	if fence != "" {
		return nil, fmt.Errorf("mdtest: %s line %d: the code block is never closed: end it with %s", name, blockLine, fence)
	}
	return p, nil
}

// opening reports whether line opens a fenced code block: three or more backticks or tildes,
// then the info string, whose first word is the language.
func opening(line string) (fence, info string, ok bool) {
	for _, c := range []string{"`", "~"} {
		n := len(line) - len(strings.TrimLeft(line, c))
		if n < 3 {
			continue
		}
		rest := strings.TrimSpace(line[n:])
		if c == "`" && strings.Contains(rest, "`") {
			return "", "", false // CommonMark: not a fence, inline code
		}
		lang, _, _ := strings.Cut(rest, " ")
		return line[:n], strings.ToLower(lang), true
	}
	return "", "", false
}

// isClosing reports whether line closes the block opened by fence: the same character, at least
// as many times, nothing else.
func isClosing(line, fence string) bool {
	return len(line) >= len(fence) && strings.Trim(line, fence[:1]) == ""
}

// heading parses an ATX heading: one to six '#', a space, the title (closing '#'s dropped).
func heading(line string) (level int, title string, ok bool) {
	level = len(line) - len(strings.TrimLeft(line, "#"))
	if level < 1 || level > 6 {
		return 0, "", false
	}
	rest := line[level:]
	if rest != "" && rest[0] != ' ' && rest[0] != '\t' {
		return 0, "", false
	}
	return level, strings.TrimSpace(strings.TrimRight(strings.TrimSpace(rest), "#")), true
}
